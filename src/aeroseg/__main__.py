import sys

from aeroseg.cli import main

sys.exit(main())
