from atp.cli import app

app(prog_name="atp")
