# smarthost: being written.
import sys
print("FAIL: not written yet")
sys.exit(1)
