"""rigctl sub-commands: each module exposes register(subparsers) and run(args) -> int."""
