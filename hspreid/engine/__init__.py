"""The one training engine every method uses (:mod:`hspreid.engine.trainer`)."""
