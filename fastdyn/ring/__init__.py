"""fastdyn.ring"""
