"""lungcad's one typed configuration: a pydantic schema per params.yaml section and the
only reader of params files (``load_params``)."""

from lungcad.config.loader import (
    ConfigError,
    load_params,
    validate_section,
    with_changes,
)
from lungcad.config.schema import (
    AugmentConfig,
    CandidatesConfig,
    CvConfig,
    DataConfig,
    DetectConfig,
    EvaluateConfig,
    ExplainConfig,
    ModelConfig,
    Params,
    PhantomConfig,
    PreprocessConfig,
    PromoteConfig,
    RealismConfig,
    SearchSpace,
    SplitConfig,
    TrainConfig,
    TuneConfig,
)

__all__ = [
    "AugmentConfig",
    "CandidatesConfig",
    "ConfigError",
    "DataConfig",
    "DetectConfig",
    "EvaluateConfig",
    "ExplainConfig",
    "ModelConfig",
    "Params",
    "PhantomConfig",
    "PreprocessConfig",
    "PromoteConfig",
    "RealismConfig",
    "SearchSpace",
    "SplitConfig",
    "CvConfig",
    "TrainConfig",
    "TuneConfig",
    "load_params",
    "validate_section",
    "with_changes",
]
