"""fastdyn.server"""
