"""medrecon.cli"""
