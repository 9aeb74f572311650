"""`python -m benchmarks` (= `make bench`): run the CPU scan benchmark and write its JSON."""

from benchmarks.scan_cpu import main

if __name__ == "__main__":
    main()
