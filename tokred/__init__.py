"""tokred: token reduction for CLIP-based text-video retrieval."""

from tokred.reducer import Chain, TokenReducer
from tokred.registry import (
    create_reducer,
    get_reducer_class,
    list_reducers,
    paper_presets,
    preset_of,
    reducer_options,
    reducer_presets,
    register_reducer,
    resolve_options,
)
from tokred.spec import BackboneSpec
from tokred.state import TokenState

__version__ = "0.1.0"

__all__ = [
    "BackboneSpec",
    "Chain",
    "TokenReducer",
    "TokenState",
    "create_reducer",
    "get_reducer_class",
    "list_reducers",
    "paper_presets",
    "preset_of",
    "reducer_options",
    "reducer_presets",
    "register_reducer",
    "resolve_options",
]
