"""What the training device did in an epoch: throughput, peak GPU memory and GPU
utilisation (NVML through ``nvidia-ml-py``, the ``gpu`` extra, when it is installed)."""

from __future__ import annotations

import logging
import threading
import time

import torch

log = logging.getLogger(__name__)


def amp_dtype_name(dtype: torch.dtype | None) -> str:
    """ "bf16", "fp16" or "fp32" (autocast off)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


class _UtilisationSampler(threading.Thread):
    def __init__(self, handle, nvml, interval_s: float) -> None:
        super().__init__(daemon=True, name="lungcad-nvml")
        self.handle, self.nvml, self.interval_s = handle, nvml, interval_s
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)


class EpochTelemetry:
    """Per-epoch device figures, as metrics named for MLflow.

    ``start()`` at the beginning of the training phase, ``stop(cubes)`` after it (one
    host sync): ``train_cubes_per_s`` and ``epoch_train_s``; on CUDA also
    ``gpu_peak_mem_gb`` and, with NVML, ``gpu_util_mean_pct``/``gpu_util_max_pct``
    sampled every ``interval_s``.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.5) -> None:
        self.device = device
        self.interval_s = interval_s
        self.nvml = self.handle = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                uuid = str(torch.cuda.get_device_properties(device).uuid)
                try:  # by UUID: NVML's order can differ from CUDA_VISIBLE_DEVICES'
                    self.handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
                except pynvml.NVMLError:
                    index = device.index if device.index is not None else 0
                    self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self.nvml = pynvml
            except Exception as exc:  # noqa: BLE001 - optional: no NVML, no utilisation figure
                log.info("GPU utilisation is not logged (NVML unavailable: %s)", exc)
        self.sampler: _UtilisationSampler | None = None
        self.started = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.nvml is not None:
            self.sampler = _UtilisationSampler(self.handle, self.nvml, self.interval_s)
            self.sampler.start()
        self.started = time.perf_counter()

    def stop(self, cubes: int) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.started
        metrics = {"epoch_train_s": seconds, "train_cubes_per_s": cubes / max(seconds, 1e-9)}
        if self.device.type == "cuda":
            metrics["gpu_peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.sampler is not None:
            self.sampler.stopped.set()
            self.sampler.join()
            if self.sampler.samples:
                samples = self.sampler.samples
                metrics["gpu_util_mean_pct"] = sum(samples) / len(samples)
                metrics["gpu_util_max_pct"] = float(max(samples))
            self.sampler = None
        return metrics
