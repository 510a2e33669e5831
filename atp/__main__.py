from atp.cli import app

if __name__ == "__main__":  # API worker processes (spawned) import this module again
    app(prog_name="atp")
