"""(being written) placeholder until its module lands."""
