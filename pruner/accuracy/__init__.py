"""How good a pruned network is, and making it better: training and fine-tuning with masks fixed, BatchNorm
recalibration and evaluation (`train`), the search's accuracy estimators (`estimate`: proxy, user function;
`supernet`: JCW's weight-sharing supernet), scoring on worker processes (`parallel`) and the torch devices and
process groups all of it runs on (`hardware`)."""
