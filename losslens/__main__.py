import sys

from losslens.cli import main

sys.exit(main())
