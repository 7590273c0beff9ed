"""``python -m strangler.promote ARGS``: the controller process, as ``strangler up`` starts it."""

from strangler.promote.cli import controller

if __name__ == "__main__":
    controller(prog_name="strangler controller", auto_envvar_prefix="STRANGLER")
