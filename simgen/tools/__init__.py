"""Tooling shared by the three command-line tools and the data path.

- :mod:`~simgen.tools.outputs`: one policy for every command that writes (create, replace only
  our own outputs, atomically, under a lock);
- :mod:`~simgen.tools.progress`: progress bars the user can switch off (``AET_PROGRESS=0``);
- :mod:`~simgen.tools.reproducible`: bit-reproducible arithmetic (the same bytes on any CPU);
- :mod:`~simgen.tools.errors`: :class:`~simgen.tools.errors.WorkFailed`, one item of a long
  command failed (a one-line error, exit 1).

Nothing is imported here: import the module you need.
"""
