"""Adapters that put other frameworks' persistence on our conditional stores."""
