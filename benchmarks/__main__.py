"""`python -m benchmarks` (= `make bench`): run the CPU scan benchmarks and write their JSON."""

from benchmarks import scan_compiled, scan_cpu

if __name__ == "__main__":
    scan_cpu.main()
    scan_compiled.main()
