"""One module per `rig` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line for
``rig --help``), ``add_arguments(parser)`` and ``run(args) -> int``. Modules
must stay cheap to import: heavy libraries (torch, onnxruntime, pyrealsense2)
are imported inside ``run``. The CLI discovers the modules itself, so adding a
command touches one file.
"""
