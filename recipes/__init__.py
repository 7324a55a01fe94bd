"""The recipes: entry scripts (run_*.py), YAML configs and the recipe machinery (pipeline/, hosts/).

Not part of the installed library: run from a checkout (the entry scripts put the checkout on sys.path)."""
