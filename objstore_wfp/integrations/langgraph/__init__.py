"""A LangGraph checkpoint saver on our conditional stores (extra ``langgraph``).

>>> from objstore_wfp.integrations.langgraph import ObjectStoreSaver
>>> with ObjectStoreSaver.from_url("memory://lg-doctest") as saver:
...     saver.get_tuple({"configurable": {"thread_id": "t"}}) is None
True
"""

from objstore_wfp.integrations.langgraph.saver import FORK, CheckpointConflictError, ObjectStoreSaver

__all__ = ["FORK", "CheckpointConflictError", "ObjectStoreSaver"]
