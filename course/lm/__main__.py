import sys

from course.lm.cli import main

sys.exit(main())
