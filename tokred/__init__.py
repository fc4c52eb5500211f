"""tokred: token reduction for CLIP-based text-video retrieval."""

from .reducer import Chain, TokenReducer
from .registry import (
    create_reducer,
    get_reducer_class,
    list_reducers,
    reducer_options,
    register_reducer,
)
from .spec import BackboneSpec
from .state import TokenState

__version__ = "0.1.0"

__all__ = [
    "BackboneSpec",
    "Chain",
    "TokenReducer",
    "TokenState",
    "create_reducer",
    "get_reducer_class",
    "list_reducers",
    "reducer_options",
    "register_reducer",
]
