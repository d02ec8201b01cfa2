import sys

from painter.serving.cli import main

sys.exit(main())
