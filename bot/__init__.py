"""reelbot"""
