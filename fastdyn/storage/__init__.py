"""fastdyn.storage"""
