"""The recipes: every official ADE20K config of MMSegmentation 1.2.2, the command here that builds it,
and the generated tables that say so.

    zoo      the table of scripts in README.md and of all recipes in docs/recipes.md
             (`python -m tools.recipes.zoo --write`); each recipe's resolved config (`--recipes --dump DIR`)
    recipes  the recipes the scripts name, and where the config a command builds differs from the official
             one (tests/test_recipes.py checks every one)
"""
