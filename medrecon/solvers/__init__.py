"""medrecon.solvers"""
