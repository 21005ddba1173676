"""Provenance: what machine and software a measurement ran on, and this repository's commit."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

from .files import REPO_ROOT


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); without them torch emulates bf16."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def repo_state() -> dict:
    """The checkout's commit and whether it was modified, read once per process (a sweep records many points)."""
    return dict(_repo_state())


@functools.lru_cache(maxsize=1)
def _repo_state() -> dict:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:  # a copy without .git (the GPU machine gets a working tree): the caller may name it
        return {"commit": os.environ.get("CKPB_COMMIT", "unknown"), "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def tensorrt_version() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", "unknown")


def gpu_state(index: int = 0) -> dict:
    """Clocks, power limit and temperature from NVML (nvidia-ml-py) where present; empty otherwise."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        state = {
            "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "memory_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "sm_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        }
        return state  # NVML stays initialised: a later nvmlInit is then cheap (it counts references)
    except pynvml.NVMLError as error:
        return {"nvml_error": str(error)}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe(device: torch.device) -> dict:
    """The platform of a point measured now on `device`: what cannot change in this process is read once (a sweep
    records hundreds of points per process); the thread count and the GPU's clocks and temperature each time."""
    info = {**_static(device.type, device.index), "cpu_threads": torch.get_num_threads()}  # intra-op threads used
    if device.type == "cuda":
        info.update(gpu_state(device.index or 0))
    return info


@functools.cache
def _static(device_type: str, index: int | None) -> dict:
    info = {
        "cpu": cpu_model(),
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tensorrt": tensorrt_version(),
        "gpu": None,
    }
    if device_type != "cuda" and torch.cuda.is_available():
        info["host_gpu"] = torch.cuda.get_device_name(0)  # a CPU point on a GPU machine belongs to that platform
    if device_type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device_type, index))
        info["gpu"] = props.name
        info["gpu_multiprocessors"] = props.multi_processor_count
        info["gpu_memory_mbytes"] = props.total_memory / 2**20
    return info
