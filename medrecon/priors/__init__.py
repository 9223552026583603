"""medrecon.priors"""
