from ck_plugins.diagnose import Facts, diagnose


def test_launch_bound_small_batch_is_named_first():
    d = diagnose(Facts("fp16", "cuda", 1, "channels_last", speedup_vs_fp32=1.02, gpu_busy_share=0.21,
                       tensor_core_share=0.9))
    assert d.sentence.startswith("fp16 is 1.02x fp32 at batch 1: launch-bound, GPU busy 21% of the time")
    assert d.faster is False


def test_fast_fp16_credits_tensor_cores():
    d = diagnose(Facts("fp16", "cuda", 256, "channels_last", speedup_vs_fp32=4.5, gpu_busy_share=0.99,
                       tensor_core_share=0.93))
    assert d.faster is True and "tensor-core kernels 93% of GPU time" in d.sentence


def test_nchw_layout_cost_and_unaligned_channels_are_reasons():
    d = diagnose(Facts("fp16", "cuda", 256, "nchw", speedup_vs_fp32=2.0, gpu_busy_share=0.99, tensor_core_share=0.8,
                       layout_share=0.2, unaligned_convs=["conv1"], cudnn_benchmark=False))
    assert any("20% of GPU time converting layouts (NCHW: use channels_last)" in r for r in d.reasons)
    assert any("cudnn.benchmark off" in r for r in d.reasons)
    assert any("1 convolution(s) with channels not multiples of 8 (conv1)" in r for r in d.reasons)


def test_cpu_bf16_depends_on_instructions():
    assert "no bf16 instructions" in diagnose(Facts("bf16", "cpu", 8, cpu_has_bf16=False)).sentence
    assert "has bf16 instructions" in diagnose(Facts("bf16", "cpu", 8, cpu_has_bf16=True)).sentence


def test_memory_bound_elementwise_work_explains_a_large_batch_before_tensor_cores():
    d = diagnose(Facts("fp16", "cuda", 256, "channels_last", speedup_vs_fp32=4.45, gpu_busy_share=0.99,
                       tensor_core_share=0.2, elementwise_share=0.6))
    assert d.sentence == ("fp16 is 4.45x fp32 at batch 256: 60% of GPU time in unfused normalisation, "
                          "activations, softmax and additions, which are memory-bound (fold batch norm, fuse with torch.compile); "
                          "tensor-core kernels only 20% of GPU time")


def test_a_compiled_backend_is_not_told_to_use_torch_compile():
    d = diagnose(Facts("fp16", "cuda", 256, "channels_last", speedup_vs_fp32=8.7, gpu_busy_share=0.99,
                       tensor_core_share=0.4, elementwise_share=0.45, fused=True))
    assert "fused normalisation/activation/addition kernels" in d.sentence and "torch.compile" not in d.sentence


def test_cudnn_benchmark_is_not_blamed_when_cudnn_is_off():
    d = diagnose(Facts("fp16", "cuda", 256, cudnn=False, cudnn_benchmark=False, speedup_vs_fp32=0.4))
    assert not any("cudnn.benchmark" in r for r in d.reasons) and "cuDNN off" in d.sentence


def test_convolution_advice_is_not_given_to_a_network_of_matrix_products():
    vit = Facts("fp16", "cuda", 256, "nchw", speedup_vs_fp32=8.2, tensor_core_share=0.7, unaligned_convs=["conv_proj"],
                conv_share=0.02)
    resnet = Facts("fp16", "cuda", 256, "nchw", speedup_vs_fp32=4.0, tensor_core_share=0.7, unaligned_convs=["conv1"])
    assert not any("channels_last" in r or "multiples of 8" in r for r in diagnose(vit).reasons)
    assert any("channels_last" in r for r in diagnose(resnet).reasons)
    assert any("multiples of 8" in r for r in diagnose(resnet).reasons)


def test_depthwise_convolutions_are_named_when_they_hold_work():
    assert any("depthwise" in r for r in diagnose(Facts("fp16", "cuda", 16, depthwise_share=0.05)).reasons)
    assert not any("depthwise" in r for r in diagnose(Facts("fp16", "cuda", 16, depthwise_share=0.0)).reasons)
