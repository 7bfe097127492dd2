module greenhouse-mlops/bench/loadgen

go 1.22
