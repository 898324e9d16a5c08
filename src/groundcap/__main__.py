from groundcap.cli import app

app(prog_name="groundcap")
