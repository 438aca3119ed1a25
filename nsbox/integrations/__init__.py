"""nsbox as the sandbox of agent frameworks; each module imports its framework, so
import one only where that framework is installed (pip install nsbox[inspect], ...)."""
