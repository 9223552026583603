"""medrecon.metrics"""
