import sys

from nsbox.cli import main

sys.exit(main())
