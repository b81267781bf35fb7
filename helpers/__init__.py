"""facial-keypoints helper package."""
