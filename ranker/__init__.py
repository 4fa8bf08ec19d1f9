"""User state, fusion, retrieval and ranking math (pure), training and evaluation."""

from ranker.cooccurrence import CooccurrenceModel, fit_cooccurrence
from ranker.state import Delivery, UserState, apply_events, state_from_dict, state_to_dict

__all__ = [
    "CooccurrenceModel",
    "Delivery",
    "UserState",
    "apply_events",
    "fit_cooccurrence",
    "state_from_dict",
    "state_to_dict",
]
