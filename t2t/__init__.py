"""The application layer: the `t2t` command and its settings, wiring the other packages."""
