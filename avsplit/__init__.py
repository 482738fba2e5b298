"""avsplit: audio-visual scene analysis from the command line.

Separates the sounds of a video by what is seen in it (on-screen vs off-screen speech,
one stem per visible instrument) and shows where in the picture the sound comes from.
"""

__version__ = "0.1.0"
