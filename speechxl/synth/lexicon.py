"""The SynthST lexicon: nouns, adjectives, verbs and adverbials with their English, German, French and
Spanish forms. Only data and its parsing live here; sentence building is in grammar.py.

Entries are written as compact `|`-separated specs so that a whole word fits on one line and a wrong form
is easy to spot; `_` stands for a space inside a multi-word form ("pomme_de_terre").
"""

from __future__ import annotations

from dataclasses import dataclass

PERSONS = ("1sg", "3sg", "1pl", "3pl")


def _words(spec: str) -> list[str]:
    return [w.replace("_", " ") for w in spec.split()]


@dataclass(frozen=True)
class Noun:
    en_sg: str
    en_pl: str | None  # None: a mass noun, used only in the definite singular
    de_gender: str  # "m" | "f" | "n"
    de_sg: str
    de_oblique: str  # accusative/dative singular ("Studenten" for the weak noun "Student")
    de_pl: str | None
    fr_gender: str  # "m" | "f"
    fr_sg: str
    fr_pl: str | None
    es_gender: str
    es_sg: str
    es_pl: str | None
    tags: frozenset[str]

    @property
    def mass(self) -> bool:
        return self.en_pl is None

    @property
    def animate(self) -> bool:
        return "person" in self.tags or "animal" in self.tags

    @property
    def de_dat_pl(self) -> str:
        # German dative plural adds -n unless the plural already ends in -n or -s (Kindern, Autos, Mädchen).
        assert self.de_pl is not None
        return self.de_pl if self.de_pl[-1] in "ns" else self.de_pl + "n"


def noun(en: str, de: str, fr: str, es: str, tags: str) -> Noun:
    """`en` "sg/pl" (no slash: mass noun); `de` "gender sg [pl [oblique-sg]]"; `fr`/`es` "gender sg [pl]"."""
    en_sg, _, en_pl = en.partition("/")
    de_w, fr_w, es_w = _words(de), _words(fr), _words(es)
    return Noun(
        en_sg=en_sg.replace("_", " "),
        en_pl=en_pl.replace("_", " ") or None,
        de_gender=de_w[0],
        de_sg=de_w[1],
        de_pl=de_w[2] if len(de_w) > 2 else None,
        de_oblique=de_w[3] if len(de_w) > 3 else de_w[1],
        fr_gender=fr_w[0],
        fr_sg=fr_w[1],
        fr_pl=fr_w[2] if len(fr_w) > 2 else None,
        es_gender=es_w[0],
        es_sg=es_w[1],
        es_pl=es_w[2] if len(es_w) > 2 else None,
        tags=frozenset(tags.split()),
    )


@dataclass(frozen=True)
class Adjective:
    en: str
    de: str  # predicative form ("teuer")
    de_stem: str  # stem that takes the attributive endings ("teur" → teure, teuren)
    fr: tuple[str, str, str, str]  # m.sg, f.sg, m.pl, f.pl — all placed after the noun
    es: tuple[str, str, str, str]
    es_estar: bool  # Spanish copula: estar (states) or ser (properties)
    tags: frozenset[str]  # noun tags it can describe

    def fr_form(self, gender: str, plural: bool) -> str:
        return self.fr[(gender == "f") + 2 * plural]

    def es_form(self, gender: str, plural: bool) -> str:
        return self.es[(gender == "f") + 2 * plural]


def _fr_forms(spec: str) -> tuple[str, str, str, str]:
    forms = _words(spec)
    if len(forms) == 4:
        return tuple(forms)  # type: ignore[return-value]
    ms = forms[0]
    if ms.endswith("e"):
        return ms, ms, ms + "s", ms + "s"
    return ms, ms + "e", ms if ms[-1] in "sx" else ms + "s", ms + "es"


def _es_forms(spec: str) -> tuple[str, str, str, str]:
    forms = _words(spec)
    if len(forms) == 4:
        return tuple(forms)  # type: ignore[return-value]
    ms = forms[0]
    if ms.endswith("o"):
        return ms, ms[:-1] + "a", ms + "s", ms[:-1] + "as"
    if ms.endswith("e"):
        return ms, ms, ms + "s", ms + "s"
    return ms, ms, ms + "es", ms + "es"


def adjective(en: str, de: str, fr: str, es: str, copula: str, tags: str) -> Adjective:
    """`de` "predicative [stem]"; `fr`/`es` one regular masculine form or all four; `copula` "ser"|"estar"."""
    de_w = de.split()
    stem = de_w[1] if len(de_w) > 1 else (de_w[0][:-1] if de_w[0].endswith("e") else de_w[0])
    return Adjective(
        en=en,
        de=de_w[0],
        de_stem=stem,
        fr=_fr_forms(fr),
        es=_es_forms(es),
        es_estar=copula == "estar",
        tags=frozenset(tags.split()),
    )


@dataclass(frozen=True)
class Verb:
    """A verb with present-tense forms for the persons in PERSONS and a past participle for the perfect."""

    en: tuple[str, str, str]  # base, 3sg, past participle
    en_particle: str  # "for" in "look for"; "" if none
    de: tuple[str, str, str]  # 1sg, 3sg, plural (1pl = 3pl in every German verb)
    de_participle: str
    de_aux_sein: bool  # perfect with "sein" (gelaufen) instead of "haben"
    de_particle: str  # separable prefix ("an" in "ruft … an"); "" if none
    de_dative: bool  # object in the dative (helfen, folgen, antworten)
    fr: tuple[str, str, str, str]
    fr_participle: str
    fr_object_prep: str  # "à" for répondre à; "" for a direct object
    es: tuple[str, str, str, str]
    es_participle: str
    subjects: frozenset[str]  # noun tags allowed as subject
    objects: frozenset[str]  # noun tags allowed as object; empty for intransitive verbs
    pps: frozenset[str]  # prepositional phrases an intransitive verb takes (see PREPOSITIONS)

    def en_form(self, person: str) -> str:
        return self.en[1] if person == "3sg" else self.en[0]

    def de_form(self, person: str) -> str:
        return self.de[0] if person == "1sg" else self.de[1] if person == "3sg" else self.de[2]

    def fr_form(self, person: str) -> str:
        return self.fr[PERSONS.index(person)]

    def es_form(self, person: str) -> str:
        return self.es[PERSONS.index(person)]


def verb(
    en: str,
    de: str,
    fr: str,
    es: str,
    subjects: str = "person",
    objects: str = "",
    pps: str = "",
    de_dative: bool = False,
    fr_prep: str = "",
) -> Verb:
    """`en` "base 3sg participle [particle]"; `de` "1sg 3sg pl participle [sein] [+particle]";
    `fr`/`es` "1sg 3sg 1pl 3pl participle"."""
    en_w, de_w, fr_w, es_w = _words(en), de.split(), _words(fr), _words(es)
    particle = next((w[1:] for w in de_w if w.startswith("+")), "")
    return Verb(
        en=(en_w[0], en_w[1], en_w[2]),
        en_particle=en_w[3] if len(en_w) > 3 else "",
        de=(de_w[0], de_w[1], de_w[2]),
        de_participle=de_w[3],
        de_aux_sein="sein" in de_w[4:],
        de_particle=particle,
        de_dative=de_dative,
        fr=(fr_w[0], fr_w[1], fr_w[2], fr_w[3]),
        fr_participle=fr_w[4],
        fr_object_prep=fr_prep,
        es=(es_w[0], es_w[1], es_w[2], es_w[3]),
        es_participle=es_w[4],
        subjects=frozenset(subjects.split()),
        objects=frozenset(objects.split()),
        pps=frozenset(pps.split()),
    )


@dataclass(frozen=True)
class Pronoun:
    person: str
    gender: str  # for French/Spanish predicate agreement ("m" | "f")
    en: str
    de: str
    fr: str  # Spanish drops subject pronouns, so there is no es field


@dataclass(frozen=True)
class Adverbial:
    en: str
    de: str
    fr: str
    es: str
    with_perfect: bool  # fits the present perfect ("today" yes, "every day" no)
    with_negation: bool  # reads naturally with "not" ("today" yes, "often" no)


@dataclass(frozen=True)
class Preposition:
    en: str
    de: str
    de_dative: bool  # the case the German preposition governs here
    fr: str
    es: str
    np_tags: frozenset[str]
    definite_only: bool  # "sans chien" drops the article after sans: keep to "the" NPs


@dataclass(frozen=True)
class ReportingVerb:
    en: str  # 3sg; the base form is en_base
    en_base: str
    de: tuple[str, str, str]
    fr: tuple[str, str, str, str]
    es: tuple[str, str, str, str]


def _reporting(en: str, de: str, fr: str, es: str) -> ReportingVerb:
    en_w, de_w, fr_w, es_w = en.split(), de.split(), fr.split(), es.split()
    return ReportingVerb(
        en=en_w[1],
        en_base=en_w[0],
        de=(de_w[0], de_w[1], de_w[2]),
        fr=(fr_w[0], fr_w[1], fr_w[2], fr_w[3]),
        es=(es_w[0], es_w[1], es_w[2], es_w[3]),
    )


NOUNS: tuple[Noun, ...] = tuple(
    noun(*spec.split(" | ")[:4], spec.split(" | ")[4])
    for spec in [
        # people
        "doctor/doctors | m Arzt Ärzte | m médecin médecins | m médico médicos | person pro",
        "teacher/teachers | m Lehrer Lehrer | m professeur professeurs | m profesor profesores | person pro",
        "student/students | m Student Studenten Studenten | m étudiant étudiants | m estudiante estudiantes | person",
        "woman/women | f Frau Frauen | f femme femmes | f mujer mujeres | person",
        "man/men | m Mann Männer | m homme hommes | m hombre hombres | person",
        "girl/girls | n Mädchen Mädchen | f fille filles | f chica chicas | person",
        "boy/boys | m Junge Jungen Jungen | m garçon garçons | m chico chicos | person",
        "child/children | n Kind Kinder | m enfant enfants | m niño niños | person",
        "mother/mothers | f Mutter Mütter | f mère mères | f madre madres | person",
        "father/fathers | m Vater Väter | m père pères | m padre padres | person",
        "sister/sisters | f Schwester Schwestern | f sœur sœurs | f hermana hermanas | person",
        "brother/brothers | m Bruder Brüder | m frère frères | m hermano hermanos | person",
        "son/sons | m Sohn Söhne | m fils fils | m hijo hijos | person",
        "daughter/daughters | f Tochter Töchter | f fille filles | f hija hijas | person",
        "neighbour/neighbours | m Nachbar Nachbarn Nachbarn | m voisin voisins | m vecino vecinos | person",
        "cook/cooks | m Koch Köche | m cuisinier cuisiniers | m cocinero cocineros | person pro",
        "farmer/farmers | m Bauer Bauern Bauern | m agriculteur agriculteurs | m agricultor agricultores | person pro",
        "king/kings | m König Könige | m roi rois | m rey reyes | person",
        "queen/queens | f Königin Königinnen | f reine reines | f reina reinas | person",
        "friend/friends | m Freund Freunde | m ami amis | m amigo amigos | person",
        "lawyer/lawyers | m Anwalt Anwälte | m avocat avocats | m abogado abogados | person pro",
        "singer/singers | m Sänger Sänger | m chanteur chanteurs | m cantante cantantes | person pro",
        "nurse/nurses | f Krankenschwester Krankenschwestern | f infirmière infirmières | f enfermera enfermeras"
        " | person pro",
        "policeman/policemen | m Polizist Polizisten Polizisten | m policier policiers | m policía policías"
        " | person pro",
        "driver/drivers | m Fahrer Fahrer | m chauffeur chauffeurs | m conductor conductores | person pro",
        "baker/bakers | m Bäcker Bäcker | m boulanger boulangers | m panadero panaderos | person pro",
        "journalist/journalists | m Journalist Journalisten Journalisten | m journaliste journalistes"
        " | m periodista periodistas | person pro",
        "scientist/scientists | m Wissenschaftler Wissenschaftler | m scientifique scientifiques"
        " | m científico científicos | person pro",
        "painter/painters | m Maler Maler | m peintre peintres | m pintor pintores | person pro",
        "writer/writers | m Schriftsteller Schriftsteller | m écrivain écrivains | m escritor escritores | person pro",
        "tourist/tourists | m Tourist Touristen Touristen | m touriste touristes | m turista turistas | person",
        "soldier/soldiers | m Soldat Soldaten Soldaten | m soldat soldats | m soldado soldados | person",
        "waiter/waiters | m Kellner Kellner | m serveur serveurs | m camarero camareros | person pro",
        "grandmother/grandmothers | f Großmutter Großmütter | f grand-mère grands-mères | f abuela abuelas | person",
        "grandfather/grandfathers | m Großvater Großväter | m grand-père grands-pères | m abuelo abuelos | person",
        "aunt/aunts | f Tante Tanten | f tante tantes | f tía tías | person",
        "uncle/uncles | m Onkel Onkel | m oncle oncles | m tío tíos | person",
        "colleague/colleagues | m Kollege Kollegen Kollegen | m collègue collègues | m colega colegas | person",
        "guest/guests | m Gast Gäste | m invité invités | m invitado invitados | person",
        "engineer/engineers | m Ingenieur Ingenieure | m ingénieur ingénieurs | m ingeniero ingenieros | person pro",
        "actress/actresses | f Schauspielerin Schauspielerinnen | f actrice actrices | f actriz actrices | person pro",
        "pilot/pilots | m Pilot Piloten Piloten | m pilote pilotes | m piloto pilotos | person pro",
        # animals
        "dog/dogs | m Hund Hunde | m chien chiens | m perro perros | animal coloured washable",
        "cat/cats | f Katze Katzen | m chat chats | m gato gatos | animal coloured",
        "horse/horses | n Pferd Pferde | m cheval chevaux | m caballo caballos | animal coloured washable",
        "bird/birds | m Vogel Vögel | m oiseau oiseaux | m pájaro pájaros | animal coloured",
        "cow/cows | f Kuh Kühe | f vache vaches | f vaca vacas | animal",
        "mouse/mice | f Maus Mäuse | f souris souris | m ratón ratones | animal coloured",
        "rabbit/rabbits | n Kaninchen Kaninchen | m lapin lapins | m conejo conejos | animal coloured",
        "pig/pigs | n Schwein Schweine | m cochon cochons | m cerdo cerdos | animal",
        "duck/ducks | f Ente Enten | m canard canards | m pato patos | animal",
        "goat/goats | f Ziege Ziegen | f chèvre chèvres | f cabra cabras | animal",
        "lion/lions | m Löwe Löwen Löwen | m lion lions | m león leones | animal wild",
        "elephant/elephants | m Elefant Elefanten Elefanten | m éléphant éléphants | m elefante elefantes"
        " | animal wild",
        "monkey/monkeys | m Affe Affen Affen | m singe singes | m mono monos | animal wild",
        "bear/bears | m Bär Bären Bären | m ours ours | m oso osos | animal wild",
        # things to read, hear and watch
        "book/books | n Buch Bücher | m livre livres | m libro libros | text portable goods coloured heavy",
        "letter/letters | m Brief Briefe | f lettre lettres | f carta cartas | text portable openable important",
        "newspaper/newspapers | f Zeitung Zeitungen | m journal journaux | m periódico periódicos"
        " | text portable goods",
        "magazine/magazines | f Zeitschrift Zeitschriften | m magazine magazines | f revista revistas"
        " | text portable goods",
        "story/stories | f Geschichte Geschichten | f histoire histoires | f historia historias | text tale",
        "poem/poems | n Gedicht Gedichte | m poème poèmes | m poema poemas | text tale",
        "song/songs | n Lied Lieder | f chanson chansons | f canción canciones | song tale",
        "film/films | m Film Filme | m film films | f película películas | film tale",
        "question/questions | f Frage Fragen | f question questions | f pregunta preguntas | question important",
        # objects
        "car/cars | n Auto Autos | f voiture voitures | m coche coches | vehicle coloured goods washable pricey",
        "bicycle/bicycles | n Fahrrad Fahrräder | m vélo vélos | f bicicleta bicicletas"
        " | vehicle coloured goods washable pricey",
        "table/tables | m Tisch Tische | f table tables | f mesa mesas | furniture coloured goods heavy round",
        "chair/chairs | m Stuhl Stühle | f chaise chaises | f silla sillas | furniture coloured goods portable heavy",
        "bed/beds | n Bett Betten | m lit lits | f cama camas | furniture goods heavy",
        "key/keys | m Schlüssel Schlüssel | f clé clés | f llave llaves | portable small goods important",
        "bag/bags | f Tasche Taschen | m sac sacs | f bolsa bolsas"
        " | portable small container openable coloured goods heavy",
        "picture/pictures | n Bild Bilder | m tableau tableaux | m cuadro cuadros | art goods pricey",
        "phone/phones | n Telefon Telefone | m téléphone téléphones | m teléfono teléfonos"
        " | portable small device goods pricey",
        "computer/computers | m Computer Computer | m ordinateur ordinateurs | m ordenador ordenadores"
        " | device goods pricey",
        "window/windows | n Fenster Fenster | f fenêtre fenêtres | f ventana ventanas | openable cleanable",
        "door/doors | f Tür Türen | f porte portes | f puerta puertas | openable coloured paintable",
        "box/boxes | f Kiste Kisten | f boîte boîtes | f caja cajas | portable container openable goods heavy",
        "bottle/bottles | f Flasche Flaschen | f bouteille bouteilles | f botella botellas"
        " | portable container openable goods washable",
        "cup/cups | f Tasse Tassen | f tasse tasses | f taza tazas | portable container coloured goods washable",
        "glass/glasses | n Glas Gläser | m verre verres | m vaso vasos | portable container goods washable",
        "ball/balls | m Ball Bälle | m ballon ballons | f pelota pelotas | portable coloured goods round",
        "lamp/lamps | f Lampe Lampen | f lampe lampes | f lámpara lámparas | device coloured goods",
        "map/maps | f Karte Karten | f carte cartes | m mapa mapas | portable goods",
        "ticket/tickets | f Fahrkarte Fahrkarten | m billet billets | m billete billetes | portable small goods",
        "umbrella/umbrellas | m Regenschirm Regenschirme | m parapluie parapluies | m paraguas paraguas"
        " | portable small coloured goods",
        "pen/pens | m Stift Stifte | m stylo stylos | m bolígrafo bolígrafos | portable small coloured goods",
        "watch/watches | f Uhr Uhren | f montre montres | m reloj relojes | portable small device goods pricey round",
        "shirt/shirts | n Hemd Hemden | f chemise chemises | f camisa camisas | clothing coloured goods washable",
        "dress/dresses | n Kleid Kleider | f robe robes | m vestido vestidos | clothing coloured goods washable pricey",
        "shoe/shoes | m Schuh Schuhe | f chaussure chaussures | m zapato zapatos | clothing coloured goods pricey",
        "hat/hats | m Hut Hüte | m chapeau chapeaux | m sombrero sombreros | clothing coloured goods portable",
        "coat/coats | m Mantel Mäntel | m manteau manteaux | m abrigo abrigos | clothing coloured goods pricey",
        "jacket/jackets | f Jacke Jacken | f veste vestes | f chaqueta chaquetas | clothing coloured goods washable",
        "skirt/skirts | m Rock Röcke | f jupe jupes | f falda faldas | clothing coloured goods washable",
        # food and drink
        "apple/apples | m Apfel Äpfel | f pomme pommes | f manzana manzanas | food fruit",
        "egg/eggs | n Ei Eier | m œuf œufs | m huevo huevos | food cookable",
        "orange/oranges | f Orange Orangen | f orange oranges | f naranja naranjas | food fruit",
        "banana/bananas | f Banane Bananen | f banane bananes | m plátano plátanos | food fruit",
        "tomato/tomatoes | f Tomate Tomaten | f tomate tomates | m tomate tomates | food fruit",
        "lemon/lemons | f Zitrone Zitronen | m citron citrons | m limón limones | food fruit",
        "carrot/carrots | f Karotte Karotten | f carotte carottes | f zanahoria zanahorias | food cookable",
        "potato/potatoes | f Kartoffel Kartoffeln | f pomme_de_terre pommes_de_terre | f patata patatas"
        " | food cookable",
        "pear/pears | f Birne Birnen | f poire poires | f pera peras | food fruit",
        "sausage/sausages | f Wurst Würste | f saucisse saucisses | f salchicha salchichas | food cookable",
        "cake/cakes | m Kuchen Kuchen | m gâteau gâteaux | m pastel pasteles | food cookable sweet",
        "pizza/pizzas | f Pizza Pizzas | f pizza pizzas | f pizza pizzas | food cookable hot",
        "bread | n Brot | m pain | m pan | food",
        "cheese | m Käse | m fromage | m queso | food",
        "soup | f Suppe | f soupe | f sopa | food cookable hot",
        "rice | m Reis | m riz | m arroz | food cookable hot",
        "meat | n Fleisch | f viande | f carne | food cookable hot",
        "fish | m Fisch | m poisson | m pescado | food cookable hot",
        "coffee | m Kaffee | m café | m café | drink hot",
        "tea | m Tee | m thé | m té | drink hot",
        "milk | f Milch | m lait | f leche | drink",
        "juice | m Saft | m jus | m zumo | drink",
        "wine | m Wein | m vin | m vino | drink",
        "beer | n Bier | f bière | f cerveza | drink",
        # places (all of them take "in" in the four languages)
        "park/parks | m Park Parks | m parc parcs | m parque parques | place",
        "garden/gardens | m Garten Gärten | m jardin jardins | m jardín jardines | place",
        "kitchen/kitchens | f Küche Küchen | f cuisine cuisines | f cocina cocinas | place building cleanable",
        "library/libraries | f Bibliothek Bibliotheken | f bibliothèque bibliothèques | f biblioteca bibliotecas"
        " | place building",
        "city/cities | f Stadt Städte | f ville villes | f ciudad ciudades | place home",
        "village/villages | n Dorf Dörfer | m village villages | m pueblo pueblos | place home",
        "house/houses | n Haus Häuser | f maison maisons | f casa casas | place building home coloured cleanable paintable",  # noqa: E501 (one lexicon entry per line)
        "office/offices | n Büro Büros | m bureau bureaux | f oficina oficinas | place building cleanable",
        "restaurant/restaurants | n Restaurant Restaurants | m restaurant restaurants | m restaurante restaurantes"
        " | place building pricey",
        "museum/museums | n Museum Museen | m musée musées | m museo museos | place building",
        "school/schools | f Schule Schulen | f école écoles | f escuela escuelas | place building",
        "hospital/hospitals | n Krankenhaus Krankenhäuser | m hôpital hôpitaux | m hospital hospitales"
        " | place building",
        "hotel/hotels | n Hotel Hotels | m hôtel hôtels | m hotel hoteles | place building home pricey",
        "shop/shops | m Laden Läden | m magasin magasins | f tienda tiendas | place building",
        "church/churches | f Kirche Kirchen | f église églises | f iglesia iglesias | place building",
        "forest/forests | m Wald Wälder | f forêt forêts | m bosque bosques | place",
        "cinema/cinemas | n Kino Kinos | m cinéma cinémas | m cine cines | place building",
        "theatre/theatres | n Theater Theater | m théâtre théâtres | m teatro teatros | place building",
        "airport/airports | m Flughafen Flughäfen | m aéroport aéroports | m aeropuerto aeropuertos | place building",
        "bakery/bakeries | f Bäckerei Bäckereien | f boulangerie boulangeries | f panadería panaderías"
        " | place building",
    ]
)

ADJECTIVES: tuple[Adjective, ...] = tuple(
    adjective(*spec.split(" | "))
    for spec in [
        "red | rot | rouge | rojo | ser | coloured",
        "black | schwarz | noir | negro | ser | coloured",
        "white | weiß | blanc blanche blancs blanches | blanco | ser | coloured",
        "green | grün | vert | verde | ser | coloured",
        "blue | blau | bleu | azul | ser | coloured",
        "yellow | gelb | jaune | amarillo | ser | coloured",
        "grey | grau | gris grise gris grises | gris | ser | coloured",
        "new | neu | neuf neuve neufs neuves | nuevo | ser | vehicle device clothing furniture",
        "expensive | teuer teur | cher chère chers chères | caro | ser | pricey",
        "modern | modern | moderne | moderno | ser | building device vehicle",
        "famous | berühmt | célèbre | famoso | ser | pro building art tale",
        "interesting | interessant | intéressant | interesante | ser | text film person building",
        "important | wichtig | important | importante | ser | important pro",
        "difficult | schwierig | difficile | difícil difícil difíciles difíciles | ser | question text",
        "tired | müde | fatigué | cansado | estar | person animal",
        "happy | glücklich | heureux heureuse heureux heureuses | feliz feliz felices felices | ser | person animal",
        "hungry | hungrig | affamé | hambriento | estar | person animal",
        "sick | krank | malade | enfermo | estar | person animal",
        "friendly | freundlich | aimable | amable | ser | person animal",
        "intelligent | intelligent | intelligent | inteligente | ser | person animal",
        "polite | höflich | poli | educado | ser | person",
        "calm | ruhig | calme | tranquilo | estar | person animal",
        "busy | beschäftigt | occupé | ocupado | estar | person",
        "nervous | nervös | nerveux nerveuse nerveux nerveuses | nervioso | estar | person animal",
        "angry | wütend | fâché | enfadado | estar | person animal",
        "lazy | faul | paresseux paresseuse paresseux paresseuses | perezoso | ser | person animal",
        "funny | lustig | drôle | gracioso | ser | person film tale",
        "dangerous | gefährlich | dangereux dangereuse dangereux dangereuses | peligroso | ser | wild",
        "heavy | schwer | lourd | pesado | ser | heavy",
        "empty | leer | vide | vacío | estar | container",
        "full | voll | plein | lleno | estar | container",
        "clean | sauber | propre | limpio | estar | washable cleanable",
        "dirty | schmutzig | sale | sucio | estar | washable cleanable",
        "round | rund | rond | redondo | ser | round",
        "fresh | frisch | frais fraîche frais fraîches | fresco | estar | food",
        "delicious | lecker | délicieux délicieuse délicieux délicieuses | delicioso | estar | food drink",
        "hot | heiß | chaud | caliente | estar | hot",
        "cold | kalt | froid | frío | estar | drink hot",
        "sweet | süß | sucré | dulce | ser | fruit sweet",
        "Italian | italienisch | italien italienne italiens italiennes | italiano | ser | person food drink film",
        "French | französisch | français française français françaises | francés francesa franceses francesas"
        " | ser | person food drink film",
        "Spanish | spanisch | espagnol | español española españoles españolas | ser | person food drink film",
        "German | deutsch | allemand | alemán alemana alemanes alemanas | ser | person food drink film",
    ]
)

TRANSITIVE_VERBS: tuple[Verb, ...] = (
    verb(
        "read reads read",
        "lese liest lesen gelesen",
        "lis lit lisons lisent lu",
        "leo lee leemos leen leído",
        objects="text",
    ),
    verb(
        "write writes written",
        "schreibe schreibt schreiben geschrieben",
        "écris écrit écrivons écrivent écrit",
        "escribo escribe escribimos escriben escrito",
        objects="text song",
    ),
    verb(
        "buy buys bought",
        "kaufe kauft kaufen gekauft",
        "achète achète achetons achètent acheté",
        "compro compra compramos compran comprado",
        objects="goods food drink",
    ),
    verb(
        "sell sells sold",
        "verkaufe verkauft verkaufen verkauft",
        "vends vend vendons vendent vendu",
        "vendo vende vendemos venden vendido",
        objects="goods food",
    ),
    verb(
        "see sees seen",
        "sehe sieht sehen gesehen",
        "vois voit voyons voient vu",
        "veo ve vemos ven visto",
        subjects="person animal",
        objects="person animal goods place film",
    ),
    verb(
        "find finds found",
        "finde findet finden gefunden",
        "trouve trouve trouvons trouvent trouvé",
        "encuentro encuentra encontramos encuentran encontrado",
        subjects="person animal",
        objects="portable animal",
    ),
    verb(
        "eat eats eaten",
        "esse isst essen gegessen",
        "mange mange mangeons mangent mangé",
        "como come comemos comen comido",
        subjects="person animal",
        objects="food",
    ),
    verb(
        "drink drinks drunk",
        "trinke trinkt trinken getrunken",
        "bois boit buvons boivent bu",
        "bebo bebe bebemos beben bebido",
        objects="drink",
    ),
    verb(
        "cook cooks cooked",
        "koche kocht kochen gekocht",
        "prépare prépare préparons préparent préparé",
        "preparo prepara preparamos preparan preparado",
        objects="cookable",
    ),
    verb(
        "carry carries carried",
        "trage trägt tragen getragen",
        "porte porte portons portent porté",
        "llevo lleva llevamos llevan llevado",
        objects="portable",
    ),
    verb(
        "open opens opened",
        "öffne öffnet öffnen geöffnet",
        "ouvre ouvre ouvrons ouvrent ouvert",
        "abro abre abrimos abren abierto",
        objects="openable",
    ),
    verb(
        "close closes closed",
        "schließe schließt schließen geschlossen",
        "ferme ferme fermons ferment fermé",
        "cierro cierra cerramos cierran cerrado",
        objects="openable",
    ),
    verb(
        "wash washes washed",
        "wasche wäscht waschen gewaschen",
        "lave lave lavons lavent lavé",
        "lavo lava lavamos lavan lavado",
        objects="washable",
    ),
    verb(
        "clean cleans cleaned",
        "reinige reinigt reinigen gereinigt",
        "nettoie nettoie nettoyons nettoient nettoyé",
        "limpio limpia limpiamos limpian limpiado",
        objects="washable cleanable",
    ),
    verb(
        "visit visits visited",
        "besuche besucht besuchen besucht",
        "visite visite visitons visitent visité",
        "visito visita visitamos visitan visitado",
        objects="building",
    ),
    verb(
        "help helps helped",
        "helfe hilft helfen geholfen",
        "aide aide aidons aident aidé",
        "ayudo ayuda ayudamos ayudan ayudado",
        objects="person",
        de_dative=True,
    ),
    verb(
        "follow follows followed",
        "folge folgt folgen gefolgt sein",
        "suis suit suivons suivent suivi",
        "sigo sigue seguimos siguen seguido",
        subjects="person animal",
        objects="person animal",
        de_dative=True,
    ),
    verb(
        "answer answers answered",
        "antworte antwortet antworten geantwortet",
        "réponds répond répondons répondent répondu",
        "respondo responde respondemos responden respondido",
        objects="person",
        de_dative=True,
        fr_prep="à",
    ),
    verb(
        "call calls called",
        "rufe ruft rufen angerufen +an",
        "appelle appelle appelons appellent appelé",
        "llamo llama llamamos llaman llamado",
        objects="person",
    ),
    verb(
        "watch watches watched",
        "schaue schaut schauen angeschaut +an",
        "regarde regarde regardons regardent regardé",
        "miro mira miramos miran mirado",
        subjects="person animal",
        objects="film person animal",
    ),
    verb(
        "hear hears heard",
        "höre hört hören gehört",
        "entends entend entendons entendent entendu",
        "oigo oye oímos oyen oído",
        subjects="person animal",
        objects="song person animal",
    ),
    verb(
        "forget forgets forgotten",
        "vergesse vergisst vergessen vergessen",
        "oublie oublie oublions oublient oublié",
        "olvido olvida olvidamos olvidan olvidado",
        objects="small",
    ),
    verb(
        "lose loses lost",
        "verliere verliert verlieren verloren",
        "perds perd perdons perdent perdu",
        "pierdo pierde perdemos pierden perdido",
        objects="small",
    ),
    verb(
        "look looks looked for",
        "suche sucht suchen gesucht",
        "cherche cherche cherchons cherchent cherché",
        "busco busca buscamos buscan buscado",
        subjects="person animal",
        objects="small animal person",
    ),
    verb(
        "feed feeds fed",
        "füttere füttert füttern gefüttert",
        "nourris nourrit nourrissons nourrissent nourri",
        "alimento alimenta alimentamos alimentan alimentado",
        objects="animal",
    ),
    verb(
        "know knows known",
        "kenne kennt kennen gekannt",
        "connais connaît connaissons connaissent connu",
        "conozco conoce conocemos conocen conocido",
        objects="person place song",
    ),
    verb(
        "understand understands understood",
        "verstehe versteht verstehen verstanden",
        "comprends comprend comprenons comprennent compris",
        "entiendo entiende entendemos entienden entendido",
        objects="person question tale",
    ),
    verb(
        "take takes taken",
        "nehme nimmt nehmen genommen",
        "prends prend prenons prennent pris",
        "tomo toma tomamos toman tomado",
        objects="portable food",
    ),
    verb(
        "bring brings brought",
        "bringe bringt bringen gebracht",
        "apporte apporte apportons apportent apporté",
        "traigo trae traemos traen traído",
        objects="portable food drink",
    ),
    verb(
        "draw draws drawn",
        "zeichne zeichnet zeichnen gezeichnet",
        "dessine dessine dessinons dessinent dessiné",
        "dibujo dibuja dibujamos dibujan dibujado",
        objects="animal building goods",
    ),
    verb(
        "paint paints painted",
        "male malt malen gemalt",
        "peins peint peignons peignent peint",
        "pinto pinta pintamos pintan pintado",
        objects="art furniture paintable",
    ),
    verb(
        "love loves loved",
        "liebe liebt lieben geliebt",
        "aime aime aimons aiment aimé",
        "quiero quiere queremos quieren querido",
        subjects="person animal",
        objects="person animal",
    ),
    verb(
        "order orders ordered",
        "bestelle bestellt bestellen bestellt",
        "commande commande commandons commandent commandé",
        "pido pide pedimos piden pedido",
        objects="food drink",
    ),
    verb(
        "repair repairs repaired",
        "repariere repariert reparieren repariert",
        "répare répare réparons réparent réparé",
        "reparo repara reparamos reparan reparado",
        objects="vehicle device furniture",
    ),
    verb(
        "build builds built",
        "baue baut bauen gebaut",
        "construis construit construisons construisent construit",
        "construyo construye construimos construyen construido",
        objects="building furniture",
    ),
    verb(
        "photograph photographs photographed",
        "fotografiere fotografiert fotografieren fotografiert",
        "photographie photographie photographions photographient photographié",
        "fotografío fotografía fotografiamos fotografían fotografiado",
        objects="person animal building",
    ),
)
assert all(v.objects for v in TRANSITIVE_VERBS)

INTRANSITIVE_VERBS: tuple[Verb, ...] = (
    verb(
        "sleep sleeps slept",
        "schlafe schläft schlafen geschlafen",
        "dors dort dormons dorment dormi",
        "duermo duerme dormimos duermen dormido",
        subjects="person animal",
        pps="in",
    ),
    verb(
        "work works worked",
        "arbeite arbeitet arbeiten gearbeitet",
        "travaille travaille travaillons travaillent travaillé",
        "trabajo trabaja trabajamos trabajan trabajado",
        pps="in with for",
    ),
    verb(
        "wait waits waited",
        "warte wartet warten gewartet",
        "attends attend attendons attendent attendu",
        "espero espera esperamos esperan esperado",
        subjects="person animal",
        pps="in with",
    ),
    verb(
        "sing sings sung",
        "singe singt singen gesungen",
        "chante chante chantons chantent chanté",
        "canto canta cantamos cantan cantado",
        pps="in with for",
    ),
    verb(
        "play plays played",
        "spiele spielt spielen gespielt",
        "joue joue jouons jouent joué",
        "juego juega jugamos juegan jugado",
        subjects="person animal",
        pps="in with without",
    ),
    verb(
        "live lives lived",
        "wohne wohnt wohnen gewohnt",
        "habite habite habitons habitent habité",
        "vivo vive vivimos viven vivido",
        pps="in_home",
    ),
    verb(
        "dance dances danced",
        "tanze tanzt tanzen getanzt",
        "danse danse dansons dansent dansé",
        "bailo baila bailamos bailan bailado",
        pps="in with without",
    ),
    verb(
        "laugh laughs laughed",
        "lache lacht lachen gelacht",
        "ris rit rions rient ri",
        "río ríe reímos ríen reído",
        pps="in with",
    ),
    verb(
        "run runs run",
        "laufe läuft laufen gelaufen sein",
        "cours court courons courent couru",
        "corro corre corremos corren corrido",
        subjects="person animal",
        pps="in with without",
    ),
    verb(
        "swim swims swum",
        "schwimme schwimmt schwimmen geschwommen sein",
        "nage nage nageons nagent nagé",
        "nado nada nadamos nadan nadado",
        subjects="person animal",
        pps="with without",
    ),
    verb(
        "eat eats eaten",
        "esse isst essen gegessen",
        "mange mange mangeons mangent mangé",
        "como come comemos comen comido",
        subjects="person animal",
        pps="in with without",
    ),
    verb(
        "study studies studied",
        "lerne lernt lernen gelernt",
        "étudie étudie étudions étudient étudié",
        "estudio estudia estudiamos estudian estudiado",
        pps="in with",
    ),
    verb(
        "talk talks talked",
        "spreche spricht sprechen gesprochen",
        "parle parle parlons parlent parlé",
        "hablo habla hablamos hablan hablado",
        pps="with",
    ),
    verb(
        "cry cries cried",
        "weine weint weinen geweint",
        "pleure pleure pleurons pleurent pleuré",
        "lloro llora lloramos lloran llorado",
        pps="in",
    ),
    verb(
        "cook cooks cooked",
        "koche kocht kochen gekocht",
        "cuisine cuisine cuisinons cuisinent cuisiné",
        "cocino cocina cocinamos cocinan cocinado",
        pps="with for",
    ),
)

PREPOSITIONS: dict[str, Preposition] = {
    "in": Preposition("in", "in", True, "dans", "en", frozenset({"place"}), False),
    "in_home": Preposition("in", "in", True, "dans", "en", frozenset({"home"}), False),
    "with": Preposition("with", "mit", True, "avec", "con", frozenset({"person", "animal"}), False),
    "without": Preposition("without", "ohne", False, "sans", "sin", frozenset({"person", "animal"}), True),
    "for": Preposition("for", "für", False, "pour", "para", frozenset({"person"}), False),
}

PRONOUNS: tuple[Pronoun, ...] = (
    Pronoun("1sg", "m", "I", "ich", "je"),
    Pronoun("3sg", "m", "he", "er", "il"),
    Pronoun("3sg", "f", "she", "sie", "elle"),
    Pronoun("1pl", "m", "we", "wir", "nous"),
)


def _adverbial(spec: str) -> Adverbial:
    """ "en | de | fr | es | flags": P fits the perfect, N fits negation, "-" neither."""
    en, de, fr, es, flags = spec.split(" | ")
    return Adverbial(en, de, fr, es, with_perfect="P" in flags, with_negation="N" in flags)


ADVERBIALS: tuple[Adverbial, ...] = tuple(
    _adverbial(spec)
    for spec in [
        "today | heute | aujourd'hui | hoy | PN",
        "now | jetzt | maintenant | ahora | N",
        "this morning | heute Morgen | ce matin | esta mañana | PN",
        "this week | diese Woche | cette semaine | esta semana | PN",
        "this year | dieses Jahr | cette année | este año | PN",
        "often | oft | souvent | a menudo | -",
        "sometimes | manchmal | parfois | a veces | -",
        "every day | jeden Tag | chaque jour | cada día | -",
        "every morning | jeden Morgen | chaque matin | cada mañana | -",
        "every evening | jeden Abend | chaque soir | cada noche | -",
        "in the morning | morgens | le matin | por la mañana | -",
        "in the evening | abends | le soir | por la noche | -",
        "at the weekend | am Wochenende | le week-end | el fin de semana | N",
        "on Monday | am Montag | lundi | el lunes | N",
        "on Tuesday | am Dienstag | mardi | el martes | N",
        "on Wednesday | am Mittwoch | mercredi | el miércoles | N",
        "on Thursday | am Donnerstag | jeudi | el jueves | N",
        "on Friday | am Freitag | vendredi | el viernes | N",
        "on Saturday | am Samstag | samedi | el sábado | N",
        "on Sunday | am Sonntag | dimanche | el domingo | N",
        "in summer | im Sommer | en été | en verano | -",
        "in winter | im Winter | en hiver | en invierno | -",
        "in spring | im Frühling | au printemps | en primavera | -",
        "in autumn | im Herbst | en automne | en otoño | -",
    ]
)

REPORTING_VERBS: tuple[ReportingVerb, ...] = (
    _reporting("say says", "sage sagt sagen", "dis dit disons disent", "digo dice decimos dicen"),
    _reporting("know knows", "weiß weiß wissen", "sais sait savons savent", "sé sabe sabemos saben"),
    _reporting("believe believes", "glaube glaubt glauben", "crois croit croyons croient", "creo cree creemos creen"),
    _reporting("think thinks", "denke denkt denken", "pense pense pensons pensent", "pienso piensa pensamos piensan"),
)
