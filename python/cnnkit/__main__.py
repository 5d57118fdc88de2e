"""`python -m cnnkit`: the main job (see cnnkit.demo until the trainer lands)."""
from .demo import main

main()
