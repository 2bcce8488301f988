"""Source models on disk: a LoRA adapter in peft's format, the scoring head, and source.json.

    <dir>/adapter_config.json, adapter_model.safetensors   (peft)
    <dir>/head.safetensors                                 (pooler and scorer)
    <dir>/source.json                                      (scorer config, backbone, training record)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..errors import ModelFileError, ParameterError
from ..paths import outputs_dir
from ..provenance import write_json_atomic
from .backbones import Backbone, load_backbone
from .scorer import Scorer, ScorerConfig

SOURCE_FILE = "source.json"


def save_source(model: Scorer, directory: str | os.PathLike, record: dict | None = None) -> Path:
    """Write the adapter, the head and a JSON record (training parameters, data fingerprint, ...)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(directory)
    portable_adapter_config(directory, model.backbone_name)
    head = {k: v.detach().float().contiguous().cpu() for k, v in model.head.state_dict().items()}
    save_file(head, directory / "head.safetensors")
    write_json_atomic(directory / SOURCE_FILE, {
        "backbone": model.backbone_name,
        "scorer": model.config.to_dict(),
        **(record or {}),
    })
    return directory


def portable_adapter_config(directory: Path, backbone_name: str) -> None:
    """peft records the base model's local path; keep the backbone's name instead (no machine
    paths in shipped files) and drop the model card that peft writes beside the adapter."""
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = backbone_name
    write_json_atomic(config_path, config)
    (directory / "README.md").unlink(missing_ok=True)


class SourceModel(str):
    """A source model's name (what tables show: its domain) that knows the folder it was found in."""

    folder: Path

    def __new__(cls, name: str, folder: str | os.PathLike):
        obj = super().__new__(cls, name)
        obj.folder = Path(folder)
        return obj


def source_places(name: str, output_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where a source model called `name` is looked for, in this order (the first with source.json wins):
    1. <outputs>/sources/<name>            trained by 01_source_lora into the outputs in use
    2. <outputs>/reference/sources/<name>  shipped into the outputs in use
    3. outputs/reference/sources/<name> of the repository: the shipped models, found wherever outputs go
    <outputs> is output_dir, else $XCROSS_OUTPUTS_DIR, else the repository's outputs/."""
    places = [root / name for root in _source_roots(output_dir)]
    return list(dict.fromkeys(p.resolve() if p.exists() else p for p in places))


def _source_roots(output_dir=None) -> list[Path]:
    """The folders holding source models by name, in source_places' order."""
    from ..paths import REPO_ROOT

    out = outputs_dir(output_dir)
    return [out / "sources", out / "reference" / "sources", REPO_ROOT / "outputs" / "reference" / "sources"]


def source_dir(name_or_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a source model: a SourceModel's own, a folder holding source.json, or the first
    of source_places(name)."""
    if isinstance(name_or_dir, SourceModel):
        return name_or_dir.folder
    p = Path(name_or_dir)
    if (p / SOURCE_FILE).is_file():
        return p
    places = source_places(str(name_or_dir), output_dir)
    for place in places:
        if (place / SOURCE_FILE).is_file():
            return place
    raise ParameterError(f"no source model {str(name_or_dir)!r}: no {SOURCE_FILE} in " + ", ".join(map(str, places))
                         + ". Fix: train it with notebooks/01_source_lora.ipynb (-p domain ...), or name a folder.")


def locate_sources(names, output_dir: str | os.PathLike | None = None) -> list[SourceModel]:
    """Each name as a SourceModel bound to the folder source_places finds first, so that every later
    load, digest and record uses that folder."""
    return [SourceModel(str(n), source_dir(n, output_dir)) for n in names]


def available_sources(output_dir: str | os.PathLike | None = None) -> list[str]:
    """Every source model found in the places of source_places (any domain name), the paper's four
    first, then the others by name: what `sources: all` scores."""
    from ..data.paths import DOMAINS

    names = {p.parent.name for root in _source_roots(output_dir) for p in root.glob(f"*/{SOURCE_FILE}")}
    return [d for d in DOMAINS if d in names] + sorted(names - set(DOMAINS))


def resolve_source_names(spec, output_dir: str | os.PathLike | None = None, data_dir=None) -> list[SourceModel]:
    """'all': every source model found (available_sources); else domain names as resolve_domains
    reads them; each bound to its folder (locate_sources)."""
    from ..data.paths import resolve_domains

    if isinstance(spec, str) and spec.strip().lower() == "all":
        names = available_sources(output_dir)
        if not names:
            raise ParameterError("sources='all': no source model found. Fix: train one with notebooks/01_source_lora.ipynb.")
    else:
        names = resolve_domains(spec, data_dir)
    return locate_sources(names, output_dir)


def load_source(name_or_dir: str | os.PathLike, backbone: Backbone | None = None) -> Scorer:
    """A saved source model, ready to score (eval mode). A backbone may be passed to reuse one."""
    directory = source_dir(name_or_dir)
    record = read_record(directory)
    backbone = backbone or load_backbone(record["backbone"])
    model = Scorer(backbone, ScorerConfig(**record["scorer"]))
    set_peft_model_state_dict(model.encoder, _read_weights(directory / "adapter_model.safetensors"))
    model.head.load_state_dict(_read_weights(directory / "head.safetensors"))
    return model.eval()


def _read_weights(path: Path) -> dict:
    from safetensors import SafetensorError

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path} cannot be read as safetensors ({e}). Fix: train the model again "
                             "(notebooks/01_source_lora.ipynb), or restore the file (git checkout -- <path> "
                             "for a shipped model).") from None


def read_record(name_or_dir: str | os.PathLike) -> dict:
    path = source_dir(name_or_dir) / SOURCE_FILE
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path} is not valid JSON ({e}). Fix: train the model again, or restore the "
                             "file (git checkout -- <path> for a shipped model).") from None
