from groundcap.cli.app import app

app(prog_name="groundcap")
