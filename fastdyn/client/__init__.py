"""fastdyn.client"""
