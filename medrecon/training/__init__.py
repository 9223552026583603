"""medrecon.training"""
