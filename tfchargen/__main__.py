import sys

from tfchargen.cli.app import main

sys.exit(main())
