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

from ..errors import ParameterError
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


def source_dir(name_or_dir: str | os.PathLike) -> Path:
    """A directory, or a name looked up under outputs/sources/ then outputs/reference/sources/."""
    p = Path(name_or_dir)
    if (p / SOURCE_FILE).is_file():
        return p
    for root in (outputs_dir() / "sources", outputs_dir() / "reference" / "sources"):
        if (root / str(name_or_dir) / SOURCE_FILE).is_file():
            return root / str(name_or_dir)
    raise ParameterError(f"no source model {str(name_or_dir)!r} (looked for {SOURCE_FILE} in it, under "
                         f"{outputs_dir() / 'sources'} and {outputs_dir() / 'reference' / 'sources'})")


def load_source(name_or_dir: str | os.PathLike, backbone: Backbone | None = None) -> Scorer:
    """A saved source model, ready to score (eval mode). A backbone may be passed to reuse one."""
    directory = source_dir(name_or_dir)
    record = json.loads((directory / SOURCE_FILE).read_text())
    backbone = backbone or load_backbone(record["backbone"])
    model = Scorer(backbone, ScorerConfig(**record["scorer"]))
    set_peft_model_state_dict(model.encoder, load_file(directory / "adapter_model.safetensors"))
    model.head.load_state_dict(load_file(directory / "head.safetensors"))
    return model.eval()


def read_record(name_or_dir: str | os.PathLike) -> dict:
    return json.loads((source_dir(name_or_dir) / SOURCE_FILE).read_text())
