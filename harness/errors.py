"""The one exception type for a user's mistakes (bindings, files, folders, flags)."""


class UserError(ValueError):
  """A mistake in what the user asked for: `python -m harness` prints its first line, exits 2.

  Anything else that escapes a run is a bug and keeps its traceback.
  """
