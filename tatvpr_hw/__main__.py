import sys

from tatvpr_hw.cli import main

sys.exit(main())
