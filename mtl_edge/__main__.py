"""``python -m mtl_edge`` runs the CLI."""

from mtl_edge.cli import app

if __name__ == "__main__":
    app(prog_name="mtl-edge")
