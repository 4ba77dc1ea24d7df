"""fastdyn.cluster"""
