"""fastdyn.bench"""
