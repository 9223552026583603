"""medrecon.data"""
